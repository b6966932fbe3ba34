#pragma once

#include <string>
#include <string_view>

namespace vecgpu {

// True when `s` is well-formed UTF-8: no stray continuation bytes, overlong forms, surrogates
// or code points past U+10FFFF.
bool IsValidUtf8(std::string_view s);

// Valid UTF-8 without control characters (C0, DEL, C1): safe as a name clients print.
bool IsPrintableUtf8(std::string_view s);

// `s` with every byte that is not part of valid UTF-8 written as "\xNN", so a message that
// quotes client input is always a valid string on the wire.
std::string EscapeInvalidUtf8(std::string_view s);

}  // namespace vecgpu
