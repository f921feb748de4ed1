# Unit tests of broker-config: the accounts file, password hashes and the
# access rules of nimbus_auth.so, without a broker.

# Debian's cmocka 1.1.5 CMake config sets CMOCKA_LIBRARIES and
# CMOCKA_INCLUDE_DIR but defines no cmocka::cmocka target, which
# nimbus_unit_test() links. Define it here when nothing else has; targets
# are resolved at generate time, so every fragment of this directory can
# use it.
if(NOT TARGET cmocka::cmocka)
  add_library(cmocka::cmocka UNKNOWN IMPORTED)
  set_target_properties(cmocka::cmocka PROPERTIES
    IMPORTED_LOCATION "${CMOCKA_LIBRARIES}"
    INTERFACE_INCLUDE_DIRECTORIES "${CMOCKA_INCLUDE_DIR}")
endif()

nimbus_unit_test(test_broker SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_broker.c
                 LIBS nimbus_accounts nimbus_common)
