"""Form parts that both dock widgets use: the camera fields."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import CheckBox, Container, FloatSpinBox, Label, PushButton
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QWidget

from ..camera import CAMERA_FIELDS, Camera
from ..errors import VarEmitterError

# label, (min, max, step), tooltip: what the value is and where to find it
CAMERA_FORM = {
    "pixel_size_nm": (
        "pixel size (nm)",
        (1, 10000, 1),
        "the size of one camera pixel in the sample plane: the camera's pixel pitch divided by the "
        "total magnification (e.g. 16 um / 160x = 100 nm); often in the file's metadata",
    ),
    "baseline": (
        "baseline (ADU)",
        (0, 1e6, 1),
        "the camera's offset: the mean reading of a dark pixel (ADU). In the camera's specification or "
        "test report, or the mean of a movie taken with the shutter closed (often 100-500)",
    ),
    "e_per_adu": (
        "e- per ADU",
        (0.01, 1e4, 0.1),
        "electrons per count (ADU) before EM gain: the camera's 'sensitivity' or 'conversion factor' "
        "in its test report (e.g. 0.2-0.5 for sCMOS, 4-50 for EMCCD)",
    ),
    "em_gain": (
        "EM gain (1 = sCMOS)",
        (1, 1e4, 1),
        "the EMCCD's electron-multiplying gain set in the acquisition software (e.g. 100-300); 1 for "
        "sCMOS and CCD cameras",
    ),
    "qe": (
        "quantum efficiency",
        (0.01, 1, 0.01),
        "the share of photons that become electrons at the dye's wavelength (camera datasheet; "
        "0.8-0.95 for back-illuminated cameras)",
    ),
    "read_noise_e": (
        "read noise (e-)",
        (0, 1e4, 0.1),
        "the camera's read noise in electrons, RMS (datasheet or test report; 1-2 e- for sCMOS, "
        "tens of e- before EM gain for EMCCD)",
    ),
}


class CameraForm(Container):
    """The six camera fields of docs/CONVENTIONS.md, with tooltips; ``changed`` fires on each edit.
    With ``measure``, a "Measure from image" button and a note below the fields (what was measured
    and how sure it is, or a warning)."""

    def __init__(self, camera: Camera | None = None, measure: bool = False) -> None:
        self.fields = {}
        for name in CAMERA_FIELDS:
            label, (low, high, step), tooltip = CAMERA_FORM[name]
            self.fields[name] = FloatSpinBox(label=label, min=low, max=high, step=step, tooltip=tooltip)
        extra = []
        if measure:
            self.measure_button = PushButton(
                text="Measure from image",
                tooltip="measure the camera (offset, gain, noise) and the PSF width from the chosen "
                "frames: background pixels and isolated spots (see the calibrate command)",
            )
            self.note = Label(value="")
            self.note.native.setWordWrap(True)
            extra = [self.measure_button, self.note]
        super().__init__(widgets=[*self.fields.values(), *extra], labels=True)
        self.set_camera(camera or Camera())

    def camera(self) -> Camera:
        """The camera of the fields (CameraError for values the camera model refuses)."""
        return Camera(**{name: float(widget.value) for name, widget in self.fields.items()})

    def valid_camera(self) -> Camera | None:
        """The camera of the fields, or None while they hold values the camera model refuses."""
        try:
            return self.camera()
        except VarEmitterError:
            return None

    def set_camera(self, camera: Camera) -> None:
        self.set_values(camera.to_dict())

    def set_values(self, values: dict) -> None:
        """Set the fields named in ``values`` (others keep theirs)."""
        for name, value in values.items():
            if name in self.fields:
                self.fields[name].value = float(value)


class LevelChooser(Container):
    """Check boxes, one per map level ("8x8", "16x16", ...), ``PER_ROW`` to a row: ``choices`` are
    the levels offered, ``value`` the ones ticked. ``changed`` fires when a box is ticked or the
    choices change."""

    PER_ROW = 3

    def __init__(self, label: str = "maps to show") -> None:
        super().__init__(layout="vertical", label=label, labels=False)
        self.margins = (0, 0, 0, 0)
        self._boxes: dict[str, CheckBox] = {}
        self._empty = Label(value="none")
        self.append(self._empty)

    @property
    def choices(self) -> list[str]:
        return list(self._boxes)

    @choices.setter
    def choices(self, names) -> None:
        names = list(names)
        if names == self.choices:
            return
        self.clear()
        self._boxes = {name: CheckBox(text=name, value=False) for name in names}
        boxes = list(self._boxes.values())
        for start in range(0, len(boxes), self.PER_ROW):
            row = Container(widgets=boxes[start : start + self.PER_ROW], layout="horizontal", labels=False)
            row.margins = (0, 0, 0, 0)
            self.append(row)  # containers relay their children's changes
        if not names:
            self._empty = Label(value="none")
            self.append(self._empty)
        self.changed.emit(self.value)

    @property
    def value(self) -> list[str]:
        return [name for name, box in self._boxes.items() if box.value]

    @value.setter
    def value(self, names) -> None:
        names = set(names)
        for name, box in self._boxes.items():
            box.value = name in names


def chosen_file(field) -> str | None:
    """The file a FileEdit names, or None where it names none (empty, or a folder: what an emptied
    field holds)."""
    value = str(field.value or "").strip()
    return None if value in ("", ".") or Path(value).is_dir() else value


def scrolled(widget: QWidget) -> QScrollArea:
    """``widget`` in a vertical scroll area: a dock that fits a small screen whatever it holds."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(widget)
    area.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    return area
