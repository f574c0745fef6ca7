"""Cameras for deployment: a capture thread per camera keeps only the latest frame.

    cam = OpenCVCamera(0)            # a USB camera index, a device path, a URL or a video file
    cam.start()
    frame = cam.latest(max_age=0.1)  # Frame(image (H,W,3) uint8 RGB, t capture time, seq); StaleFrame if older

A policy must act on what the scene looks like now: a queue of frames would hand it the past,
so each camera overwrites one slot. Capture times are ``time.monotonic()`` right after the
grab returns (the same clock the robot backends use). ``RealSenseCamera`` reads a RealSense
colour stream through pyrealsense2 when that package is installed.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from robalign.errors import RobalignError


class CameraError(RobalignError):
    """A camera that cannot be opened or stopped delivering frames."""


class StaleFrame(CameraError):
    """The newest frame is older than allowed: acting on it would act on the past."""


@dataclasses.dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    t: float  # s, time.monotonic() at capture
    seq: int  # frames captured before this one


class Camera:
    """A capture thread filling one latest-frame slot; subclasses implement _open/_grab/_close."""

    name = "camera"

    def __init__(self):
        self._frame: Frame | None = None
        self._lock = threading.Lock()
        self._running = False
        self._error: str | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 5.0) -> "Camera":
        self._open()
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-capture", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while self._frame is None:
            if self._error or time.monotonic() > deadline:
                self.close()
                raise CameraError(f"{self.name}: no frame within {timeout} s" + (f" ({self._error})" if self._error
                                                                                   else ""))
            time.sleep(0.005)
        return self

    def latest(self, max_age: float | None = None, now: float | None = None) -> Frame:
        """The newest frame; StaleFrame if it is older than max_age seconds (at `now`, default: now)."""
        with self._lock:
            frame = self._frame
        if frame is None:
            raise CameraError(f"{self.name}: not started or no frame yet" + (f" ({self._error})" if self._error
                                                                               else ""))
        age = (time.monotonic() if now is None else now) - frame.t
        if max_age is not None and age > max_age:
            raise StaleFrame(f"{self.name}: the newest frame is {age * 1000:.0f} ms old (max_age "
                             f"{max_age * 1000:.0f} ms)" + (f"; the capture stopped: {self._error}" if self._error
                                                             else ""))
        return frame

    def close(self) -> None:
        self._running = False
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False

    def _loop(self) -> None:
        seq = 0
        while self._running:
            image = self._grab()
            if image is None:  # the source ended or failed: the slot ages and latest() says so
                return
            frame = Frame(image, time.monotonic(), seq)
            with self._lock:
                self._frame = frame
            seq += 1

    def _open(self) -> None: ...

    def _grab(self) -> np.ndarray | None: ...

    def _close(self) -> None: ...


class OpenCVCamera(Camera):
    """Any source cv2.VideoCapture opens. A video file plays at its own frame rate (a recorded
    camera for tests and dry runs), looping when `loop`."""

    def __init__(self, source: int | str = 0, loop: bool = False):
        super().__init__()
        self.source, self.loop = source, loop
        self.name = f"opencv:{source}"
        self._cap = None
        self._file_period = None
        self._next = 0.0

    def _open(self):
        import cv2
        source = int(self.source) if isinstance(self.source, str) and self.source.isdigit() else self.source
        cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            raise CameraError(f"{self.name}: cv2.VideoCapture could not open {self.source!r} (a camera index, "
                              "device path, stream URL or video file)")
        if isinstance(source, str) and not source.startswith(("/dev/", "rtsp:", "http:", "https:")):
            fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
            self._file_period = 1.0 / fps
        self._cap = cap
        self._next = time.monotonic()

    def _grab(self):
        import cv2
        if self._file_period is not None:  # pace a file like a live camera
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next += self._file_period
        ok, bgr = self._cap.read()
        if not ok and self.loop and self._file_period is not None:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        if not ok:
            self._error = "the source returned no frame (unplugged, or the file ended)"
            return None
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _close(self):
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class RealSenseCamera(Camera):
    """An Intel RealSense colour stream through pyrealsense2 (install it for your platform)."""

    def __init__(self, serial: str | None = None, width: int = 640, height: int = 480, fps: int = 30):
        super().__init__()
        self.serial, self.size, self.fps = serial, (width, height), fps
        self.name = f"realsense:{serial or 'first'}"
        self._pipeline = None

    def _open(self):
        try:
            import pyrealsense2 as rs
        except ImportError:
            raise CameraError("RealSenseCamera needs pyrealsense2 (`pip install pyrealsense2`); or use "
                              "OpenCVCamera for a UVC camera") from None
        config = rs.config()
        if self.serial:
            config.enable_device(self.serial)
        config.enable_stream(rs.stream.color, *self.size, rs.format.rgb8, self.fps)
        self._pipeline = rs.pipeline()
        self._pipeline.start(config)

    def _grab(self):
        frames = self._pipeline.wait_for_frames(timeout_ms=1000)
        color = frames.get_color_frame()
        return np.asanyarray(color.get_data()).copy() if color else None

    def _close(self):
        if self._pipeline is not None:
            self._pipeline.stop()
            self._pipeline = None


def make_camera(spec: str | int) -> Camera:
    """'realsense' or 'realsense:SERIAL', else an OpenCV source ('0', '/dev/video2', 'file.mp4', 'loop:file.mp4')."""
    spec = str(spec)
    if spec == "realsense" or spec.startswith("realsense:"):
        return RealSenseCamera(spec.split(":", 1)[1] if ":" in spec else None)
    if spec.startswith("loop:"):
        return OpenCVCamera(spec[5:], loop=True)
    return OpenCVCamera(spec)
