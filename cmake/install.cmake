# Install layout and the Debian package (docs/install.md).
#
#   cmake --install build --prefix /usr/local      # or scripts/package.sh for a .deb
#
# bin/bulkhead, the Python package where Debian's /usr/bin/python3 imports it from, the systemd
# unit, the man page, the docs and the example config. The daemon finds the worker SDK relative
# to its own binary (src/cli/sdk_location.h), so nothing points back into a checkout.

# Paths are decided at install time, from the prefix the install really uses (`--prefix`, or
# CPack's /usr): one build serves `cmake --install build --prefix /usr/local` and the package.
# Debian's python3 imports from /usr/lib/python3/dist-packages (packages) and
# /usr/local/lib/python3.X/dist-packages (local installs); the daemon looks in both shapes.
install(CODE "set(BULKHEAD_SOURCE_DIR \"${CMAKE_SOURCE_DIR}\")
set(BULKHEAD_BINARY_DIR \"${CMAKE_BINARY_DIR}\")")
install(CODE [[
  set(BULKHEAD_PYTHON_DIR "lib/python3/dist-packages")
  if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    execute_process(COMMAND /usr/bin/python3 -c
      "import sys; print('lib/python%d.%d/dist-packages' % sys.version_info[:2])"
      OUTPUT_VARIABLE _python_dir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _python_rc)
    if(_python_rc EQUAL 0)
      set(BULKHEAD_PYTHON_DIR "${_python_dir}")
    endif()
  endif()
  if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    set(BULKHEAD_ETC_DIR "/etc/bulkhead")
  else()
    set(BULKHEAD_ETC_DIR "${CMAKE_INSTALL_PREFIX}/etc/bulkhead")
  endif()
  set(BULKHEAD_INSTALLED_BIN "${CMAKE_INSTALL_PREFIX}/bin/bulkhead")
  set(BULKHEAD_INSTALLED_CONFIG "${BULKHEAD_ETC_DIR}/bulkhead.toml")
  set(BULKHEAD_INSTALLED_DOCS "${CMAKE_INSTALL_PREFIX}/share/doc/bulkhead")
  set(BULKHEAD_INSTALLED_HANDLERS "${CMAKE_INSTALL_PREFIX}/share/bulkhead/examples/handlers")
  configure_file(${BULKHEAD_SOURCE_DIR}/packaging/bulkhead.service.in
    ${BULKHEAD_BINARY_DIR}/bulkhead.service @ONLY)
  configure_file(${BULKHEAD_SOURCE_DIR}/packaging/etc-bulkhead.toml.in
    ${BULKHEAD_BINARY_DIR}/etc-bulkhead.toml @ONLY)
]])

install(TARGETS bulkhead RUNTIME DESTINATION bin)
install(DIRECTORY python/bulkhead DESTINATION "\${BULKHEAD_PYTHON_DIR}"
  FILES_MATCHING PATTERN "*.py" PATTERN "__pycache__" EXCLUDE)
# systemd reads /lib/systemd/system and /usr/local/lib/systemd/system alike.
install(FILES ${CMAKE_BINARY_DIR}/bulkhead.service DESTINATION lib/systemd/system)
# The man page is generated from the binary's own help (the `man` target); OPTIONAL so an install
# from a build without it still works.
install(FILES ${CMAKE_BINARY_DIR}/bulkhead.1 DESTINATION share/man/man1 OPTIONAL)
install(FILES README.md BENCHMARKS.md DESTINATION share/doc/bulkhead)
install(DIRECTORY docs/ DESTINATION share/doc/bulkhead/docs FILES_MATCHING PATTERN "*.md"
  PATTERN "*.png")
install(FILES examples/bulkhead.toml DESTINATION share/bulkhead/examples)
install(DIRECTORY examples/handlers DESTINATION share/bulkhead/examples
  FILES_MATCHING PATTERN "*.py" PATTERN "__pycache__" EXCLUDE)
# The service's config: the example pool with its handlers where they were installed. In the
# package it is a conffile (an upgrade keeps the operator's edits); a local install never
# overwrites one that is already there.
install(CODE [[
  set(_config "$ENV{DESTDIR}${BULKHEAD_INSTALLED_CONFIG}")
  # The journal's directory (the unit's StateDirectory=; made here too for a daemon run by hand).
  file(MAKE_DIRECTORY "$ENV{DESTDIR}/var/lib/bulkhead")
  if(EXISTS "${_config}")
    message(STATUS "Kept: ${_config} (already there)")
  else()
    # file(INSTALL) adds $DESTDIR to an absolute destination itself.
    file(INSTALL ${BULKHEAD_BINARY_DIR}/etc-bulkhead.toml DESTINATION "${BULKHEAD_ETC_DIR}"
      RENAME bulkhead.toml)
  endif()
]])

# Debian package: scripts/package.sh -> bulkhead_<version>_amd64.deb
set(CPACK_GENERATOR "DEB")
# Stage with DESTDIR and the real prefix, so the install-time paths above see /usr.
set(CPACK_SET_DESTDIR ON)
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_INSTALL_PREFIX "/usr")
set(CPACK_PACKAGE_NAME "bulkhead")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_CONTACT "bulkhead maintainers <bulkhead@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "supervisor of warm, isolated worker processes for crash-prone ML code")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
  "bulkhead keeps pools of warm, isolated, resource-bounded Python worker processes, hands each\n job to one and returns exactly one typed outcome per job with evidence (signal, stderr tail,\n stacks), replacing crashed workers and retrying infrastructure failures on fresh ones.\n Includes the daemon, the Python client and worker SDK, bulkhead run, and a systemd unit.")
set(CPACK_DEBIAN_FILE_NAME "DEB-DEFAULT")  # bulkhead_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION "admin")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)      # libtomlplusplus3, libsqlite3-0, libstdc++6 ...
set(CPACK_DEBIAN_PACKAGE_DEPENDS "python3 (>= 3.9)")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "python3-numpy")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "python3-torch, python3-joblib, python3-sklearn")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA "${CMAKE_SOURCE_DIR}/packaging/conffiles")
set(CPACK_STRIP_FILES ON)
include(CPack)
