"""What the dock widgets share within one napari session: trained models and the camera.

One module-level :data:`SESSION` object (not function attributes, not globals scattered over
modules). Signals are psygnal's, so widgets connect bound methods, held weakly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from psygnal import Signal

from ..camera import Camera


@dataclass(frozen=True)
class Scene:
    """What the last prediction saw in a movie: what "Train for this movie" simulates."""

    name: str  # the movie's layer
    psf_sigma_nm: float
    background_photons: float  # per pixel per frame
    density_per_um2: float  # emitters per frame per square micrometre
    psf_file: str | None = None  # the PSF measured from beads that the prediction fitted, if any


def user_folder() -> Path:
    """Where the plugin saves what it makes by default: trained models, PSFs measured from beads."""
    return Path.home() / "napari-var-emitter-models"


class Session:
    """Models trained in this napari session (name -> checkpoint path), the last camera used, and
    the scene of the last prediction."""

    models_changed = Signal()
    camera_changed = Signal(object)  # Camera
    scene_changed = Signal(object)  # Scene

    def __init__(self) -> None:
        self._models: dict[str, Path] = {}
        self._camera = Camera()
        self.scene: Scene | None = None

    # models -------------------------------------------------------------------------------
    def add_model(self, name: str, path: str | Path) -> None:
        """Register (or refresh) a checkpoint under ``name``; the predict widget lists it at once."""
        self._models[str(name)] = Path(path)
        self.models_changed.emit()

    def models(self) -> dict[str, Path]:
        return dict(self._models)

    def clear(self) -> None:
        self._models.clear()
        self._camera = Camera()
        self.scene = None
        self.models_changed.emit()

    def set_scene(self, scene: Scene) -> None:
        self.scene = scene
        self.scene_changed.emit(scene)

    # camera -------------------------------------------------------------------------------
    @property
    def camera(self) -> Camera:
        return self._camera

    @camera.setter
    def camera(self, camera: Camera) -> None:
        if camera != self._camera:
            self._camera = camera
            self.camera_changed.emit(camera)


SESSION = Session()


def disconnect_when_destroyed(qobject, signal, slot) -> None:
    """Disconnect ``slot`` from a session ``signal`` when ``qobject`` (a widget) is destroyed."""
    qobject.destroyed.connect(lambda *_: signal.disconnect(slot, missing_ok=True))
