# Programs the integration tests drive (built into build/bin).
add_executable(nb-itest ${CMAKE_CURRENT_LIST_DIR}/nb_itest.c)
target_link_libraries(nb-itest PRIVATE nimbus-agent msgpackc)
add_executable(nb-blob ${CMAKE_CURRENT_LIST_DIR}/nb_blob.c)
target_link_libraries(nb-blob PRIVATE nimbus-agent)
# A module of an older family ABI (test_offload_modules), out of the
# worker's default modules_dir so that no worker serves it unasked.
add_library(nimbus-oldabi MODULE ${CMAKE_CURRENT_LIST_DIR}/module_old_abi.c)
target_include_directories(nimbus-oldabi PRIVATE
                           ${PROJECT_SOURCE_DIR}/cloud-worker/src
                           ${PROJECT_SOURCE_DIR}/common/include)
target_link_libraries(nimbus-oldabi PRIVATE msgpackc)
set_target_properties(nimbus-oldabi PROPERTIES PREFIX "" C_VISIBILITY_PRESET
                      hidden LIBRARY_OUTPUT_DIRECTORY
                      ${CMAKE_BINARY_DIR}/test-modules)

# One take of due agent offers, straight through the storage model
# (test_agent_offer: only the first of two takes gets them).
add_executable(nb-agent-take ${CMAKE_CURRENT_LIST_DIR}/nb_agent_take.c)
target_link_libraries(nb-agent-take PRIVATE nimbus_storage)

# The agent as the next patch version (test_agent_update): the same
# objects as libnimbus-agent, with version.c saying one patch more, in
# test-agent-next/lib under the same soname, so that scripts/package-agent
# packs the same bin/nimbus-agent with it as a newer package.
math(EXPR _nb_next_patch "${PROJECT_VERSION_PATCH} + 1")
set(NIMBUS_TEST_NEXT_VERSION
    "${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}.${_nb_next_patch}")
add_library(nimbus-agent-next SHARED
            "$<FILTER:$<TARGET_OBJECTS:nimbus-agent>,EXCLUDE,/version\\.c\\.o$>"
            ${PROJECT_SOURCE_DIR}/terminal-agent/src/version.c)
get_target_property(_nb_soversion nimbus-agent SOVERSION)
set_target_properties(nimbus-agent-next PROPERTIES
  OUTPUT_NAME nimbus-agent VERSION ${PROJECT_VERSION}
  SOVERSION ${_nb_soversion}
  LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/test-agent-next/lib)
target_compile_definitions(nimbus-agent-next PRIVATE
  NB_AGENT_VERSION_OVERRIDE="${NIMBUS_TEST_NEXT_VERSION}")
target_include_directories(nimbus-agent-next PRIVATE
  ${PROJECT_SOURCE_DIR}/terminal-agent/include
  ${PROJECT_BINARY_DIR}/include
  ${PROJECT_SOURCE_DIR}/common/include)
target_link_libraries(nimbus-agent-next PRIVATE ${AGENT_LIB_LINK})
target_link_options(nimbus-agent-next PRIVATE
  -Wl,--version-script=${PROJECT_SOURCE_DIR}/terminal-agent/libnimbus-agent.map
  -Wl,--no-undefined -Wl,-u,nimbus_strerror -Wl,-u,nimbus_errname)
