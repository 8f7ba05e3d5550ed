// Internal helpers shared by the safetensors and config readers.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace spense::detail {

// Parse JSON, refusing duplicate keys in any object (nlohmann would keep the last one
// silently). Throws spense::Error "<where>: not valid JSON (...)" or "<where>: key 'k'
// appears more than once".
nlohmann::json parse_json_strict(std::string_view text, const std::string& where);

// Whole file as a string; throws spense::Error "<path>: cannot open: ..." on failure.
std::string read_text_file(const std::string& path);

}  // namespace spense::detail
