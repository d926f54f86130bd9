#pragma once

#include "filters/filter.h"

namespace sidecrypt::filters::gossip {

using filters::Datagram;  // filters/filter.h

}  // namespace sidecrypt::filters::gossip
