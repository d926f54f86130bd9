"""Claim: test_gossip_member_ports holds over IPv6 (fd00:250::/64) too: without member_ports the
push/pull to a member on 7947 leaves in plaintext; with them a mixed fleet on 7946 and 7947 forms
with every payload sealed; with sidecrypt stopped nothing leaves the host."""
import harness
from test_gossip_member_ports import MemberPorts


class MemberPortsIpv6(MemberPorts):
    IPV6 = True


del MemberPorts  # run only the IPv6 variant here

if __name__ == "__main__":
    harness.main()
