"""Claim: the mixed-fleet cluster of test_gossip_mixed_fleet also forms over IPv6
(fd00:250::/64): TPROXY capture, the raw sender and inbound delivery work for both families."""
import harness
from test_gossip_mixed_fleet import MixedFleet


class MixedFleetIpv6(MixedFleet):
    IPV6 = True


del MixedFleet  # run only the IPv6 variant here

if __name__ == "__main__":
    harness.main()
