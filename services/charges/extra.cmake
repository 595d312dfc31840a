lm_embed_file(lotmesh-charges ${dir}/openapi.json charges_openapi)
