lm_embed_file(lotmesh-registry ${dir}/ui.html rg_ui_html)
