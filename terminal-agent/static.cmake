# libnimbus-agent.a (NIMBUS_AGENT_STATIC), for apps that ship one binary.
#
# It keeps the shared library's promise: it defines nimbus_* and nothing
# else, so an app that links its own Paho or msgpack helpers gets no
# clash. A plain archive of our objects could not: Paho's archive (renamed
# calls, common/src/paho_*.c) and nimbus_common/nimbus_schemas would come
# along as global symbols. So the library's objects, the Paho hooks, what
# they need of the static helper libraries and the patched Paho archive
# are linked into one relocatable object (cc -r: the same --wrap options
# as the shared link apply), whose symbols other than nimbus_* objcopy
# then makes local (the pattern of libnimbus-agent.map). The archive holds
# that one object; what it still needs (msgpack-c, libcrypto, libarchive,
# libsodium, pthread, dl, anl, m) is the target's link interface and nimbus-agent.pc's
# Libs.private / Requires.private. A public-API build on Paho's shared
# library (cmake/NimbusPaho.cmake, NB_PAHO_ARCHIVE empty) has no archive
# to take in: the app then links libpaho-mqtt3a too.
set(_nb_paho_dep)
if(TARGET nimbus_paho_archive)
  set(_nb_paho_dep nimbus_paho_archive)
endif()
set(_prelinked_all ${CMAKE_CURRENT_BINARY_DIR}/nimbus-agent-all.o)
set(_prelinked ${CMAKE_CURRENT_BINARY_DIR}/nimbus-agent-static.o)
add_custom_command(OUTPUT ${_prelinked}
  COMMAND ${CMAKE_C_COMPILER} -r -nostdlib
          "$<TARGET_PROPERTY:nimbus_paho,INTERFACE_LINK_OPTIONS>"
          -Wl,-u,nimbus_strerror -Wl,-u,nimbus_errname
          -o ${_prelinked_all}
          "$<TARGET_OBJECTS:nimbus-agent>" "$<TARGET_OBJECTS:nimbus_nodelay>"
          "$<TARGET_FILE:nimbus_schemas>" "$<TARGET_FILE:nimbus_common>"
          "$<TARGET_FILE:nimbus_sign>" ${NB_PAHO_ARCHIVE}
  COMMAND ${NB_OBJCOPY} --wildcard --keep-global-symbol=nimbus_*
          ${_prelinked_all} ${_prelinked}
  COMMAND ${CMAKE_COMMAND} -E rm -f ${_prelinked_all}
  DEPENDS nimbus-agent nimbus_schemas nimbus_common nimbus_sign
          ${_nb_paho_dep}
          "$<TARGET_OBJECTS:nimbus-agent>" "$<TARGET_OBJECTS:nimbus_nodelay>"
          ${NB_PAHO_ARCHIVE}
  COMMAND_EXPAND_LISTS VERBATIM
  COMMENT "libnimbus-agent's objects and Paho as one object exporting nimbus_*")

add_library(nimbus-agent-static STATIC ${_prelinked})
set_source_files_properties(${_prelinked} PROPERTIES EXTERNAL_OBJECT TRUE
                            GENERATED TRUE)
set_target_properties(nimbus-agent-static PROPERTIES
  OUTPUT_NAME nimbus-agent
  LINKER_LANGUAGE C)
target_include_directories(nimbus-agent-static INTERFACE
  $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/common/include>
  $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_link_libraries(nimbus-agent-static INTERFACE msgpackc OpenSSL::Crypto
                      PkgConfig::LIBARCHIVE PkgConfig::SODIUM
                      Threads::Threads ${CMAKE_DL_LIBS} anl m)
if(NOT NB_PAHO_ARCHIVE)
  target_link_libraries(nimbus-agent-static INTERFACE
                        eclipse-paho-mqtt-c::paho-mqtt3a)
endif()
