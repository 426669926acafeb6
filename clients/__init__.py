"""telehub's Python SDK: ``DeviceClient`` for device firmware, ``HubClient`` for dashboards, ``RestClient`` for
the REST API. It speaks only the public contract (../shared/API.md) and imports no server package."""

from clients.backoff import Backoff
from clients.device import DeviceClient
from clients.errors import (
    ApiError,
    BufferFull,
    ClientClosed,
    FrameRejected,
    SessionEnded,
    SubscriptionError,
    TelehubClientError,
)
from clients.hub import HubClient
from clients.rest import RestClient
from clients.seqstate import SeqState
from clients.subscription import Message, Subscription

__all__ = [
    "ApiError",
    "Backoff",
    "BufferFull",
    "ClientClosed",
    "DeviceClient",
    "FrameRejected",
    "HubClient",
    "Message",
    "RestClient",
    "SeqState",
    "SessionEnded",
    "Subscription",
    "SubscriptionError",
    "TelehubClientError",
]
