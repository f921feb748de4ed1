# Loading the agent (terminal-agent/src/pkg.c, update.c): the package
# checks against SPEC.md's test vector, the safe extractor against hostile
# archives, the install's refusals before any download, the rollback's
# link swaps. Compiles the library's sources itself to reach ag_*.
nimbus_unit_test(test_update
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_update.c ${AGENT_LIB_SOURCES}
          ${AGENT_LOAD_SOURCES}
  LIBS ${AGENT_LIB_LINK})
target_include_directories(test_update PRIVATE
  ${PROJECT_SOURCE_DIR}/terminal-agent/src
  ${PROJECT_SOURCE_DIR}/terminal-agent/include)
# The key compiled in (-DNIMBUS_AGENT_PUBKEY) is SPEC.md's test key here,
# so that an install without a key file checks against it.
target_compile_definitions(test_update PRIVATE
  NB_AGENT_PUBKEY="03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
