# Unit tests of nimbus-agent backup/restore's pure parts (names, kinds,
# the safe directory walk, hashing, copies, the hash cache), no network.
nimbus_unit_test(test_backup
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_backup.c
  LIBS nimbus_agent_backup nimbus_common)
