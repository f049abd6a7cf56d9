# Shared compile settings for every ptrain target.
function(ptrain_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
endfunction()

# A target whose sources include libtorch gets a precompiled header of the torch API, so the heavy
# torch headers are parsed once per target rather than once per translation unit. Keep the number
# of such targets (and of torch-including sources) small: each costs a PCH build on 2 cores.
function(ptrain_use_torch target)
  target_link_libraries(${target} PRIVATE torch)
  target_precompile_headers(${target} PRIVATE <torch/torch.h>)
endfunction()

# Every executable: warnings, and tcmalloc as the process allocator (see CMakeLists.txt).
function(ptrain_executable target)
  ptrain_target_defaults(${target})
  target_link_libraries(${target} PRIVATE ${TCMALLOC_LIBRARY})
  target_sources(${target} PRIVATE ${PROJECT_SOURCE_DIR}/core/tcmalloc_settings.cpp)
endfunction()
