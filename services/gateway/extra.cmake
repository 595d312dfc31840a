pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)
target_link_libraries(lotmesh-gateway PRIVATE PkgConfig::SODIUM)
lm_embed_file(lotmesh-gateway ${dir}/dashboard.html gw_dashboard_html)
lm_embed_file(lotmesh-gateway ${dir}/docs.html gw_docs_html)
# Swagger UI's files (npm swagger-ui-dist, installed into web/ by make build) for /docs;
# GATEWAY_DOCS_DIR overrides where the gateway looks at run time.
target_compile_definitions(lotmesh-gateway PRIVATE
  LM_DOCS_DIR="${CMAKE_SOURCE_DIR}/web/node_modules/swagger-ui-dist")
