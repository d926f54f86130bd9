#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace sidecrypt::proxy {

// The closest candidate by edit distance, if it is close enough to be a plausible typo.
std::optional<std::string_view> didYouMean(std::string_view word,
                                           const std::vector<std::string_view>& candidates);

}  // namespace sidecrypt::proxy
