# spense_wgmma_define(target): the small-M kernel's warpgroup (wgmma) shapes exist only in sm_90a
# device code (src/cuda/gemv_tc.cuh, gemv_stream.cu), so SPENSE_WGMMA_BUILT is defined (and exported) when
# CMAKE_CUDA_ARCHITECTURES holds 90a. With a plain 90 beside it the driver might load the sm_90
# code, which lacks them: off then. Used by cmake/cuda.cmake and src/cuda/standalone/.
function(spense_wgmma_define target)
  if(CMAKE_CUDA_ARCHITECTURES MATCHES "90a")
    if(CMAKE_CUDA_ARCHITECTURES MATCHES "(^|;)90($|;|-)")
      message(WARNING "CMAKE_CUDA_ARCHITECTURES holds both 90 and 90a: the small-M kernel's wgmma shapes are off")
    else()
      target_compile_definitions(${target} PUBLIC SPENSE_WGMMA_BUILT=1)
    endif()
  endif()
endfunction()
