#pragma once
// The console's files (proxy/console/assets/), compiled into the binary by embed.cmake.

#include <string_view>

namespace regpin::proxy::console::assets {

extern const std::string_view index_html;
extern const std::string_view console_js;
extern const std::string_view console_css;

}  // namespace regpin::proxy::console::assets
