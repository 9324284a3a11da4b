"""gravpy: a mesh message bus for Python programs on a LAN."""

import logging

from gravpy.buffer import MsgBuffer
from gravpy.filter import Pattern
from gravpy.grav import Grav
from gravpy.leaf import connect
from gravpy.message import Message
from gravpy.pod import Overflow, Pod, PodStatistics
from gravpy.receipt import MsgReceipt

__all__ = [
    "Grav",
    "Message",
    "MsgBuffer",
    "MsgReceipt",
    "Overflow",
    "Pattern",
    "Pod",
    "PodStatistics",
    "connect",
]

__version__ = "0.1.0"

# A library is silent until its user configures logging (the logging HOWTO's advice for libraries).
logging.getLogger("gravpy").addHandler(logging.NullHandler())
