"""Protocol-level fakes of the cloud services the trigger talks to (Vertex AI has no emulator)."""

from tests.fakes.vertex import FakeVertex

__all__ = ["FakeVertex"]
