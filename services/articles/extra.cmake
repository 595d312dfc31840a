lm_embed_file(lotmesh-articles ${dir}/openapi.json articles_openapi)
