"""Dashboard fan-out (API.md §5), its pure parts: channel patterns, stream entries -> messages, the Hub.

``channels`` parses subscription patterns (MQTT ``+`` / ``#``) and names the streams a pattern reads;
``messages`` turns stream entries into channel ``data``; ``registry`` is the process-local Hub that matches
and encodes each message once per encoding. No Redis and no asyncio here: the Node and the client sessions
(the WebSocket endpoint) build on these.
"""
