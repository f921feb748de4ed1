# Unit tests of broker-config: the accounts file, password hashes and the
# access rules of nimbus_auth.so, without a broker.

nimbus_unit_test(test_broker SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_broker.c
                 LIBS nimbus_accounts nimbus_common)
