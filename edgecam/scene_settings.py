"""Settings of the simulated door scene (``camera.simulated``): the demo's, the tests' and the benchmarks' camera."""

from typing import Literal

from pydantic import Field, model_validator

from edgecam.section import Section


class SimulatedSettings(Section):
    """The synthetic door scene used by the demo, the tests and the benchmarks."""

    seed: int = Field(1, ge=0, le=2**31 - 1, description="Random seed: the same seed renders the same scene.")
    width: int = Field(640, ge=64, le=4096, description="Width in pixels of the rendered scene (stills).")
    height: int = Field(480, ge=48, le=3072, description="Height in pixels of the rendered scene (stills).")
    fps: float = Field(10.0, gt=0, le=120, description="Frames per second of the rendered scene.")
    door_period: float = Field(12.0, ge=2.0, le=3600.0, description="Seconds from one door opening to the next.")
    first_opening: float = Field(4.0, ge=0.0, le=3600.0, description="Seconds after start of the first door opening.")
    door_opening: float = Field(1.0, ge=0.1, le=60.0, description="Seconds the door takes to swing open.")
    door_open: float = Field(2.0, ge=0.0, le=600.0, description="Seconds the door stays fully open.")
    door_closing: float = Field(1.0, ge=0.1, le=60.0, description="Seconds the door takes to swing shut.")
    door_angle: float = Field(75.0, ge=1.0, le=110.0, description="Degrees the door swings open.")
    noise: float = Field(3.0, ge=0.0, le=50.0, description="Standard deviation of sensor noise, grey levels.")
    light_switching: bool = Field(False, description="Switch the hall light on and off between openings.")
    light_ramp: float = Field(
        0.5, ge=0.0, le=5.0, description="Seconds the exposure takes to adapt after the light switches."
    )
    passer_by: bool = Field(False, description="A person walks past outside the door zone between openings.")
    light_with_door: bool = Field(
        False, description="The hall light comes on as the door starts to open, and goes off again before the next."
    )
    infrared: bool = Field(
        False, description="The camera switches to a grey infrared picture between openings, and back in the next gap."
    )
    walk_through: bool = Field(False, description="A person steps out through the open door and away to one side.")
    lamp: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="How unevenly the hall light lights the scene: 0 evenly, 1 all from a lamp at the top left.",
    )
    light_level: float = Field(1.0, ge=0.01, le=2.0, description="Brightness of the lit scene; below 1 is a dim hall.")
    sensor_gain: float = Field(
        1.0,
        ge=1.0,
        le=64.0,
        description=(
            "The camera's analogue gain: multiplies the picture's brightness and the sensor noise (shot_noise, "
            "read_noise) with it; a dim hall at light_level 0.25 and gain 4 is as bright as a lit one, and noisier."
        ),
    )
    shot_noise: float = Field(
        0.0,
        ge=0.0,
        le=50.0,
        description=(
            "Photon shot noise: standard deviation in grey levels of a white pixel at gain 1; its variance grows "
            "with the pixel's grey level and with sensor_gain. 0 = none."
        ),
    )
    read_noise: float = Field(
        0.0,
        ge=0.0,
        le=50.0,
        description="Read noise: standard deviation in grey levels at gain 1, whatever the brightness; times the gain.",
    )
    lamp_rise: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description=(
            "Seconds a switched hall light takes to come fully on or go out (a dimmer, an LED driver's soft start, "
            "a warming lamp): the light ramps linearly. 0 = at once."
        ),
    )
    shadow: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description=(
            "Fraction of the hall light a shadow takes away right of an edge just inside the door zone's right "
            "border; it shows only while the light is on. 0 = no shadow."
        ),
    )
    side_light: float = Field(
        0.0,
        ge=0.0,
        le=2.0,
        description=(
            "A light from the side (a lamp in the next room through a doorway) that brightens the picture by this "
            "fraction right of an edge just inside the door zone's right border; it comes on in one gap between "
            "openings and goes off in the next, ramping over lamp_rise. 0 = none."
        ),
    )
    person_at_door: float = Field(
        0.0,
        ge=0.0,
        le=600.0,
        description=(
            "Seconds a person stands in front of the closed door (waiting, shifting weight), once between openings, "
            "walking up to it and away again; the door does not move. 0 = nobody."
        ),
    )
    jpeg_quality: int = Field(
        0,
        ge=0,
        le=100,
        description="Round-trip every frame through JPEG at this quality (an MJPEG camera or stream); 0 = off.",
    )
    drift: float = Field(
        0.0, ge=0.0, le=0.9, description="Slow exposure drift: fraction by which brightness swings up and down."
    )
    drift_period: float = Field(60.0, ge=1.0, le=3600.0, description="Seconds of one exposure drift cycle.")
    flicker: float = Field(0.0, ge=0.0, le=0.5, description="Frame-to-frame brightness flicker, fraction.")
    shake: float = Field(0.0, ge=0.0, le=20.0, description="Camera shake: pixels the picture jitters each frame.")
    style: Literal["hall", "porch", "porch-grey"] = Field(
        "hall",
        description=(
            "The scene and camera: 'hall', a white panelled door seen straight on in a beige hall; 'porch', a dark "
            "wooden plank door with a glass pane seen from high up to its right through a wide-angle lens (barrel "
            "distortion, strong vignetting, a lifted tone curve, row and colour noise); 'porch-grey', the same with a "
            "grey door in a grey wall (little contrast). Its door zone: edgecam.sources.simulated.door_zone."
        ),
    )
    person_pose: Literal["stand", "lean", "phone"] = Field(
        "stand",
        description=(
            "What the person at the door (person_at_door) does there: 'stand' shifting weight, 'lean' on the door "
            "frame, 'phone' with a phone held to the head."
        ),
    )
    pet: bool = Field(False, description="A cat crosses the bottom of the door zone once between openings (4 s).")
    h264_bitrate: int = Field(
        0,
        ge=0,
        le=50_000,
        description=(
            "Round-trip the frames through a real H.264 encoder (libx264 in PyAV) at this many kbit/s, one group "
            "of pictures of h264_gop frames at a time, as an IP camera or rpicam-vid stream: blocks, smeared noise, "
            "a pulse at every I-frame. 0 = off."
        ),
    )
    h264_gop: int = Field(
        20, ge=1, le=600, description="Frames from one H.264 I-frame to the next (the group of pictures)."
    )
    camera_light: float = Field(
        1.0,
        ge=0.0,
        le=4.0,
        description=(
            "Strength of the camera's own light, an infrared lamp beside it that the agent switches "
            "(illuminator.pin): grey light in proportion to what each surface reflects, 1 = as bright as the lit "
            "hall in the picture's middle, more near the camera, less in the corners; the exposure overshoots "
            "and adapts over light_ramp after each switch. 0 = none."
        ),
    )
    duration: float = Field(0.0, ge=0.0, description="Seconds after which the scene ends; 0 = endless.")

    @model_validator(mode="after")
    def _door_fits_period(self) -> "SimulatedSettings":
        swing = self.door_opening + self.door_open + self.door_closing
        if self.door_period <= swing:
            raise ValueError(
                f"door_period ({self.door_period} s) must be longer than one opening "
                f"(door_opening + door_open + door_closing = {swing} s)"
            )
        # A person at the door walks up for 1.5 s and away for 1.5 s, with time to spare before the next opening.
        if self.person_at_door > 0 and self.door_period - swing < self.person_at_door + 4.0:
            raise ValueError(
                f"door_period ({self.door_period} s) must leave person_at_door + 4 s ({self.person_at_door + 4.0} s) "
                f"between openings (door_opening + door_open + door_closing = {swing} s)"
            )
        # A pet takes 4 s to cross, with 0.5 s to spare on either side.
        if self.pet and self.door_period - swing < 5.0:
            raise ValueError(
                f"door_period ({self.door_period} s) must leave 5 s between openings for the pet to cross "
                f"(door_opening + door_open + door_closing = {swing} s)"
            )
        if self.person_pose != "stand" and self.person_at_door <= 0:
            raise ValueError(f"person_pose '{self.person_pose}' needs a person at the door: set person_at_door")
        if self.jpeg_quality > 0 and self.h264_bitrate > 0:
            raise ValueError("jpeg_quality and h264_bitrate are both set: compress as JPEG or as H.264, not both")
        if self.h264_bitrate > 0 and (self.width % 2 or self.height % 2):
            raise ValueError(
                f"h264_bitrate needs an even width and height (4:2:0 colour halves both): {self.width}x{self.height}"
            )
        hall_only = [name for name in ("walk_through", "passer_by") if getattr(self, name)]
        if self.style != "hall" and hall_only:
            raise ValueError(f"{' and '.join(hall_only)}: drawn for style 'hall' only, not for '{self.style}'")
        return self
