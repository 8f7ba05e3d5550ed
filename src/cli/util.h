// Small helpers shared by the subcommands: reading input files with errors that name them,
// and human-readable numbers.
#pragma once
#include <cstdint>
#include <string>

namespace spense::cli {

// Whole file as bytes. Throws spense::Error "<path>: ..." if missing, a directory, or unreadable.
std::string read_text_file(const std::string& path);
// True if path is an existing regular file.
bool file_exists(const std::string& path);
// Throws "<dir>: model directory not found" / "... is not a directory".
void require_dir(const std::string& dir);
// 1234567 -> "1,234,567"
std::string with_commas(int64_t n);
// 1288490188 -> "1.20 GiB"
std::string human_bytes(uint64_t n);

}  // namespace spense::cli
