// Element types as named by safetensors, and scalar conversions to and from fp32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace spense {

enum class DType : uint8_t { F64, F32, F16, BF16, F8_E4M3, I64, I32, I16, I8, U8, BOOL };

// Bytes per element.
size_t dtype_size(DType t);
// Safetensors spelling ("BF16", "F8_E4M3", ...).
const char* dtype_name(DType t);
// Parse the safetensors spelling; returns false for anything unknown.
bool dtype_parse(std::string_view name, DType* out);
// True for the floating-point types that convert to fp32 (F64, F32, F16, BF16, F8_E4M3).
bool dtype_is_float(DType t);

float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);  // round to nearest even; NaN stays NaN
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);   // round to nearest even
float fp8_e4m3_to_f32(uint8_t v);
uint8_t f32_to_fp8_e4m3(float f);  // round to nearest even, saturating to +-448, NaN -> 0x7f

// Convert n elements of type t at src to fp32 (float types only; throws otherwise).
void convert_to_f32(DType t, const void* src, float* dst, size_t n);
// Convert n fp32 values to type t (float types only).
void convert_from_f32(DType t, const float* src, void* dst, size_t n);

}  // namespace spense
