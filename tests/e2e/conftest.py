"""End-to-end fixtures: a real `confbot serve` process, publisher processes, face videos, Janus."""

from tests.confbot.store.conftest import postgresql_url
from tests.support.ice import ice_address, pinned_ice
from tests.support.janus import janus_server
from tests.support.media import astronaut_video, fer2013_video, media_cache_dir

__all__ = [
    "astronaut_video", "fer2013_video", "ice_address", "janus_server", "media_cache_dir", "pinned_ice",
    "postgresql_url",
]
