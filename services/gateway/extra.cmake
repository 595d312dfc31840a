pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)
target_link_libraries(lotmesh-gateway PRIVATE PkgConfig::SODIUM)
