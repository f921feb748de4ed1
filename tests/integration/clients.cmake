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
