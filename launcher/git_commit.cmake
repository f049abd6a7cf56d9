# Writes OUTPUT (launcher/git_commit.h) with the commit SOURCE_DIR is checked out at: run by the
# build on every build, rewriting the header only when the text changes (so only version.cpp
# recompiles after a commit). "unknown" when SOURCE_DIR is not the top of a git checkout (a
# source tarball unpacked inside some other repository included); "-dirty" when tracked files
# differ from the commit. --no-optional-locks: never take the index lock another git user holds.
set(commit unknown)
if(GIT_EXECUTABLE)
  execute_process(COMMAND ${GIT_EXECUTABLE} --no-optional-locks rev-parse --show-toplevel
                  WORKING_DIRECTORY ${SOURCE_DIR} OUTPUT_VARIABLE top RESULT_VARIABLE rc
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  get_filename_component(top "${top}" REALPATH)
  get_filename_component(source "${SOURCE_DIR}" REALPATH)
  if(rc EQUAL 0 AND top STREQUAL source)
    execute_process(COMMAND ${GIT_EXECUTABLE} --no-optional-locks rev-parse --short=12 HEAD
                    WORKING_DIRECTORY ${SOURCE_DIR} OUTPUT_VARIABLE head RESULT_VARIABLE rc
                    OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(rc EQUAL 0)
      set(commit ${head})
      execute_process(
        COMMAND ${GIT_EXECUTABLE} --no-optional-locks status --porcelain --untracked-files=no
        WORKING_DIRECTORY ${SOURCE_DIR} OUTPUT_VARIABLE changes ERROR_QUIET)
      if(NOT changes STREQUAL "")
        set(commit "${commit}-dirty")
      endif()
    endif()
  endif()
endif()
set(text "// Generated at build time by launcher/git_commit.cmake.
#pragma once

namespace ptrain {

inline constexpr const char* kGitCommit = \"${commit}\";

}  // namespace ptrain
")
set(old "")
if(EXISTS ${OUTPUT})
  file(READ ${OUTPUT} old)
endif()
if(NOT old STREQUAL text)
  file(WRITE ${OUTPUT} "${text}")
endif()
