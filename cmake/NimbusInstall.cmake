# What `cmake --install BUILD [--prefix P]` puts where (GNUInstallDirs;
# lib stands for CMAKE_INSTALL_LIBDIR):
#
#   bin/                      nimbus-agent, nimbus-worker, nimbusctl
#   lib/libnimbus-agent.so*   the agent library: .so.1 (soname) -> .so.1.x.y
#   lib/libnimbus-agent.a     with NIMBUS_AGENT_STATIC (terminal-agent/static.cmake)
#   include/nimbus/           agent.h, errors.h, version.h
#   lib/pkgconfig/            nimbus-agent.pc (nimbus-agent-static.pc)
#   lib/cmake/nimbus-agent/   find_package(nimbus-agent): nimbus::agent
#                             (nimbus::agent_static)
#   lib/nimbus/nimbus_auth.so the Mosquitto plugin
#   lib/nimbus/modules/       the worker's offload modules (nimbus-<name>.so)
#   lib/systemd/system/       nimbus-worker@.service (NIMBUS_SYSTEMD_UNITDIR)
#   lib/sysusers.d/           nimbus.conf: the user the workers run as
#   share/doc/nimbus/         README.md; examples/: production configs for
#                             the worker, Mosquitto and Redis
#
# The tree is relocatable: the programs find libnimbus-agent through an
# RPATH relative to themselves ($ORIGIN), the worker its modules beside its
# own bin directory (wk_offload_locate_modules), nimbus-agent.pc its prefix
# from its own place (${pcfiledir}) and the CMake package from its own.
# Components: agent (the library and the nimbus-agent CLI), dev (headers,
# pkg-config, CMake package), cloud (worker, nimbusctl, plugin, modules).

# Installed programs find libnimbus-agent in the prefix's lib directory,
# wherever the prefix is; a CMAKE_INSTALL_RPATH given at configure time
# wins.
file(RELATIVE_PATH _nb_bin_to_lib "${CMAKE_INSTALL_FULL_BINDIR}"
     "${CMAKE_INSTALL_FULL_LIBDIR}")
if(NOT CMAKE_INSTALL_RPATH)
  set_target_properties(nimbus-agent-cli nimbus-worker nimbusctl PROPERTIES
                        INSTALL_RPATH "$ORIGIN/${_nb_bin_to_lib}")
endif()

set(NIMBUS_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/nimbus-agent")
set(NIMBUS_PKGLIBDIR "${CMAKE_INSTALL_LIBDIR}/nimbus")

# ---- The agent: library, CLI, headers -----------------------------------
set_target_properties(nimbus-agent PROPERTIES EXPORT_NAME agent)
install(TARGETS nimbus-agent EXPORT nimbus-agent-targets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT agent
          NAMELINK_COMPONENT dev
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS nimbus-agent-cli
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT agent)
# The public headers: nimbus/agent.h and what it includes.
install(FILES ${PROJECT_SOURCE_DIR}/terminal-agent/include/nimbus/agent.h
              ${PROJECT_SOURCE_DIR}/common/include/nimbus/errors.h
              ${PROJECT_BINARY_DIR}/include/nimbus/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/nimbus COMPONENT dev)

# ---- pkg-config -----------------------------------------------------------
# prefix is found from the .pc file's own directory, so the tree works
# wherever it was installed.
file(RELATIVE_PATH NIMBUS_PC_TO_PREFIX
     "${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig" "${CMAKE_INSTALL_PREFIX}")
string(REGEX REPLACE "/$" "" NIMBUS_PC_TO_PREFIX "${NIMBUS_PC_TO_PREFIX}")
# What a static link of the library needs besides it (the same as
# nimbus::agent_static's INTERFACE_LINK_LIBRARIES).
set(NIMBUS_PC_REQUIRES_PRIVATE "msgpack libcrypto libarchive libsodium")
set(NIMBUS_PC_LIBS_PRIVATE "-lpthread -ldl -lanl -lm")
# A public-API build on Paho's shared library (cmake/NimbusPaho.cmake):
# the static library does not hold Paho, the app links it.
set(NB_PAHO_STATIC_NEEDS_PAHO FALSE)
if(NOT NB_PAHO_ARCHIVE)
  set(NIMBUS_PC_LIBS_PRIVATE "-lpaho-mqtt3a ${NIMBUS_PC_LIBS_PRIVATE}")
  set(NB_PAHO_STATIC_NEEDS_PAHO TRUE)
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/nimbus-agent.pc.in
               ${PROJECT_BINARY_DIR}/pkgconfig/nimbus-agent.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/nimbus-agent.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

# ---- The CMake package: find_package(nimbus-agent) ----------------------
include(CMakePackageConfigHelpers)
install(EXPORT nimbus-agent-targets NAMESPACE nimbus::
        FILE nimbus-agent-targets.cmake
        DESTINATION ${NIMBUS_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/nimbus-agent-config.cmake.in
  ${PROJECT_BINARY_DIR}/cmake/nimbus-agent-config.cmake
  INSTALL_DESTINATION ${NIMBUS_CMAKE_DIR})
# 1.x.y serves any app built against 1.a.b with a <= x (new calls only
# added within a major; the soname changes with it).
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/cmake/nimbus-agent-config-version.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cmake/nimbus-agent-config.cmake
              ${PROJECT_BINARY_DIR}/cmake/nimbus-agent-config-version.cmake
        DESTINATION ${NIMBUS_CMAKE_DIR} COMPONENT dev)

# ---- libnimbus-agent.a (NIMBUS_AGENT_STATIC) ------------------------------
# nimbus::agent_static in the CMake package, nimbus-agent-static.pc for
# pkg-config (pkg-config --cflags --libs nimbus-agent-static: the archive
# and what it needs, for an app of one binary).
if(TARGET nimbus-agent-static)
  set_target_properties(nimbus-agent-static PROPERTIES
                        EXPORT_NAME agent_static)
  install(TARGETS nimbus-agent-static EXPORT nimbus-agent-static-targets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
    INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(EXPORT nimbus-agent-static-targets NAMESPACE nimbus::
          FILE nimbus-agent-static-targets.cmake
          DESTINATION ${NIMBUS_CMAKE_DIR} COMPONENT dev)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/nimbus-agent-static.pc.in
                 ${PROJECT_BINARY_DIR}/pkgconfig/nimbus-agent-static.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/nimbus-agent-static.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
endif()

# ---- The cloud: programs, plugin, modules --------------------------------
install(TARGETS nimbus-worker nimbusctl
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT cloud)
install(TARGETS nimbus_auth
        LIBRARY DESTINATION ${NIMBUS_PKGLIBDIR} COMPONENT cloud)
# Every module cloud-worker/modules defines (one MODULE library each).
get_property(_nb_modules DIRECTORY ${PROJECT_SOURCE_DIR}/cloud-worker/modules
             PROPERTY BUILDSYSTEM_TARGETS)
foreach(_m ${_nb_modules})
  get_target_property(_type ${_m} TYPE)
  if(_type STREQUAL "MODULE_LIBRARY")
    install(TARGETS ${_m}
            LIBRARY DESTINATION ${NIMBUS_PKGLIBDIR}/modules COMPONENT cloud)
  endif()
endforeach()

# ---- The cloud as services ------------------------------------------------
# systemd's own directories, under the prefix (not the multiarch libdir):
# a prefix of /usr gives /usr/lib/systemd/system. The unit names the
# installed worker by the prefix of the install itself (--prefix), so it
# is made at install time.
set(NIMBUS_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING
    "where nimbus-worker@.service is installed, relative to the prefix")
set(NIMBUS_SYSUSERSDIR "lib/sysusers.d" CACHE STRING
    "where the nimbus user's sysusers.d file is installed, relative to the prefix")
install(CODE "
  set(NB_BINDIR \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}\")
  set(NB_DOCDIR \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DOCDIR}\")
  configure_file(\"${PROJECT_SOURCE_DIR}/cloud-worker/systemd/nimbus-worker@.service.in\"
                 \"${PROJECT_BINARY_DIR}/systemd/nimbus-worker@.service\" @ONLY)"
  COMPONENT cloud)
install(FILES ${PROJECT_BINARY_DIR}/systemd/nimbus-worker@.service
        DESTINATION ${NIMBUS_SYSTEMD_UNITDIR} COMPONENT cloud)
install(FILES ${PROJECT_SOURCE_DIR}/cloud-worker/systemd/nimbus.sysusers
        DESTINATION ${NIMBUS_SYSUSERSDIR} RENAME nimbus.conf COMPONENT cloud)
install(FILES ${PROJECT_SOURCE_DIR}/README.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT cloud)
install(FILES ${PROJECT_SOURCE_DIR}/broker-config/production/worker.conf
              ${PROJECT_SOURCE_DIR}/broker-config/production/mosquitto.conf
              ${PROJECT_SOURCE_DIR}/broker-config/production/redis.conf
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples COMPONENT cloud)
