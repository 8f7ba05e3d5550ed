// A one-line progress bar on stderr: label, bar, done/total, rate and ETA, redrawn in place
// at most a few times a second. Silent when stderr is not a terminal (logs and CI stay
// clean) unless forced. Header-only so any library (eval, prune) can use it without a link
// dependency.
#pragma once
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace spense {

class ProgressBar {
 public:
  // unit names what is counted, for the rate ("tok" -> "1234 tok/s").
  ProgressBar(std::string label, int64_t total, std::string unit = "it", bool force = false)
      : label_(std::move(label)), unit_(std::move(unit)), total_(total),
        enabled_(force || isatty(fileno(stderr))), start_(Clock::now()), last_(start_) {}
  ~ProgressBar() { finish(); }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  bool enabled() const { return enabled_; }

  // Set the number of finished units (absolute, not an increment).
  void update(int64_t done) {
    done_ = done;
    if (!enabled_ || finished_) return;
    const auto now = Clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(200) && drawn_) return;
    last_ = now;
    draw(now);
  }

  // Draw the final state and end the line (idempotent).
  void finish() {
    if (!enabled_ || finished_) return;
    finished_ = true;
    draw(Clock::now());
    std::fputc('\n', stderr);
    std::fflush(stderr);
  }

  // The text of the line for the given state (no carriage return), for tests.
  static std::string format(const std::string& label, int64_t done, int64_t total,
                            double seconds, const std::string& unit) {
    constexpr int kWidth = 24;
    const double frac = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 0.0;
    const int fill = static_cast<int>(frac * kWidth + 1e-9);
    std::string bar(static_cast<size_t>(fill), '#');
    bar.append(static_cast<size_t>(kWidth - fill), '.');
    const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
    char buf[256];
    std::string eta = "--:--";
    if (rate > 0 && done <= total) eta = clock_str(static_cast<double>(total - done) / rate);
    std::snprintf(buf, sizeof buf, "%s [%s] %lld/%lld %.1f %s/s ETA %s elapsed %s", label.c_str(),
                  bar.c_str(), static_cast<long long>(done), static_cast<long long>(total), rate,
                  unit.c_str(), eta.c_str(), clock_str(seconds).c_str());
    return buf;
  }

 private:
  using Clock = std::chrono::steady_clock;

  static std::string clock_str(double s) {
    const long long t = static_cast<long long>(s + 0.5);
    char buf[32];
    if (t >= 3600)
      std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, (t / 60) % 60, t % 60);
    else
      std::snprintf(buf, sizeof buf, "%02lld:%02lld", t / 60, t % 60);
    return buf;
  }

  void draw(Clock::time_point now) {
    const double secs = std::chrono::duration<double>(now - start_).count();
    const std::string line = format(label_, done_, total_, secs, unit_);
    // \r + clear-to-end-of-line so a shorter line leaves no residue.
    std::fprintf(stderr, "\r%s\033[K", line.c_str());
    std::fflush(stderr);
    drawn_ = true;
  }

  std::string label_, unit_;
  int64_t total_ = 0, done_ = 0;
  bool enabled_ = false, finished_ = false, drawn_ = false;
  Clock::time_point start_, last_;
};

}  // namespace spense
