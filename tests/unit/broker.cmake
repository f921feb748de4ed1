# Unit tests of broker-config: the accounts file, password hashes, the
# access rules of nimbus_auth.so and its table of served task types
# (route.h), without a broker.

nimbus_unit_test(test_broker SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_broker.c
                 LIBS nimbus_accounts nimbus_common)
nimbus_unit_test(test_route SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_route.c
                 LIBS nimbus_accounts nimbus_common)
