"""Answers ARP requests for one address, as a proxy would: the answer goes
back out of the port the request came in on, and the request goes no further.
"""
from scapy.layers.l2 import ARP, Ether

from reshaper.hook import Reply

ADDRESS = "10.77.0.254"
MAC = "02:00:00:00:00:fe"


def answer(frame, ctx):
    arp = frame.getlayer(ARP)
    if arp is None or arp.op != 1 or arp.pdst != ADDRESS:
        return frame  # not ours: on its way
    reply = Ether(src=MAC, dst=frame.src) / ARP(op=2, hwsrc=MAC, psrc=ADDRESS, hwdst=arp.hwsrc, pdst=arp.psrc)
    return Reply(reply)
