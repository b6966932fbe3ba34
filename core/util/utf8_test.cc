#include "core/util/utf8.h"

#include <gtest/gtest.h>

namespace vecgpu {
namespace {

TEST(Utf8Test, Validates) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("docs"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_TRUE(IsValidUtf8(std::string_view("a\0b", 3)));
  EXPECT_FALSE(IsPrintableUtf8(std::string_view("a\0b", 3)));
  EXPECT_FALSE(IsPrintableUtf8("tab\there"));
  EXPECT_FALSE(IsPrintableUtf8("\xc2\x85"));  // C1 control
  EXPECT_TRUE(IsPrintableUtf8("caf\xc3\xa9"));
}

TEST(Utf8Test, EscapesOnlyInvalidBytes) {
  EXPECT_EQ(EscapeInvalidUtf8("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(EscapeInvalidUtf8("a\xff"
                              "b\xc3"),
            "a\\xFFb\\xC3");
  EXPECT_TRUE(IsValidUtf8(EscapeInvalidUtf8("\x80\x81\xfe")));
}

}  // namespace
}  // namespace vecgpu
