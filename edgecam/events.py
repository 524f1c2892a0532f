"""When events start and end: camera motion, the door's look and the door contact together, no I/O."""

from typing import Literal

from edgecam.config import DoorSettings, MotionSettings
from edgecam.models import DoorState


class EventTracker:
    """When events start and end, from camera motion and, where they exist, the door contact and the door state.

    Without a way to tell the door from the rest (no reference of the closed door, no contact, or
    ``door.confirm`` off), camera motion starts an event after ``motion.min_frames`` moving frames in a row.
    With one, camera motion starts nothing by itself: it is *pending* until the door confirms it by leaving its
    closed look (``DoorWatcher.left_closed``) or the contact opening, within ``door.confirm_window`` seconds of
    the last moving frame; then the event starts at once. A person, a pet or a shadow in front of the shut door
    moves the camera but not the door. The contact opening starts an event at once. ``door.contact_mode`` says
    which of them may start events: ``any``, ``both`` (camera motion counts only while the contact is open or
    was within ``event_gap``) or ``contact_only``. An event ends after ``event_gap`` seconds without either (where the
    door confirms motion, motion while it looks closed does not count), but
    while the door is open (by its state or the contact) it waits for the door to close, or for
    ``door.open_quiet`` seconds of quiet.
    """

    def __init__(self, motion: MotionSettings, door: DoorSettings) -> None:
        self._motion = motion
        self._door = door
        self.reset()

    @staticmethod
    def describe(motion: MotionSettings, door: DoorSettings, reference: bool) -> str:
        """How events will start, in one line for ``check-config``; ``reference``: a closed-door reference exists."""
        alone = f"camera motion alone starts events ({motion.min_frames} moving frames in a row)"
        if not door.confirm:
            return f"door.confirm is off: {alone}"
        confirmers = [
            *(["the door leaving its closed look"] if reference else []),
            *(["the door contact opening"] if door.contact_pin is not None else []),
        ]
        if not confirmers:
            return (
                f"no reference of the closed door ('edgecam calibrate' makes one) and no door contact: {alone}, "
                "so a person, a pet or a shadow in the door zone starts one too"
            )
        return "camera motion starts an event once confirmed by " + " or ".join(confirmers)

    def reset(self) -> None:
        """Forget any event under way."""
        self.in_event = False
        self.pending = False
        """Camera motion waits for the door to confirm it: stills taken now are held, not yet kept."""
        self.why = ""
        """Why the last event started or ended, in words, for ``edgecam replay --explain`` and the log."""
        self._streak = 0
        self._last_active = float("-inf")
        self._last_moving = float("-inf")
        self._contact_was: bool | None = None
        self._contact_open_at = float("-inf")

    def update(
        self,
        t: float,
        moving: bool,
        door: DoorState | None,
        contact_open: bool | None,
        left_closed: bool | None = None,
        *,
        light_changing: bool = False,
    ) -> Literal["start", "end"] | None:
        """This frame's motion and door readings in; ``start``, ``end`` or None out.

        ``light_changing``: the detector sees a light or exposure change (or is settling after one). The door's
        look is then no evidence either way (a lamp's shadow edge across the zone comes and goes with it), so
        motion seen meanwhile waits for no confirmation, and starts an event as without one: ``min_frames``
        moving frames in a row. Motion from before the change may still be confirmed.
        """
        mode = self._door.contact_mode if contact_open is not None else "any"
        gap = self._motion.event_gap
        contact_changed = (
            contact_open is not None and self._contact_was is not None and contact_open != self._contact_was
        )
        contact_opened = contact_changed and contact_open is True
        self._contact_was = contact_open
        if contact_open:
            self._contact_open_at = t
        camera = moving and (mode == "any" or (mode == "both" and t - self._contact_open_at <= gap))
        self._streak = self._streak + 1 if camera else 0
        if camera and not light_changing:
            self._last_moving = t
        confirming = self._door.confirm and (left_closed is not None or contact_open is not None)
        # Where the door confirms motion, motion in front of a door that looks closed (someone waiting after it
        # shut, camera shake) keeps no event going either.
        door_moving = not confirming or bool(left_closed) or bool(contact_open) or light_changing
        if (camera and door_moving) or contact_changed:
            self._last_active = t
        self.pending = False
        if not self.in_event:
            recent = t - self._last_moving <= self._door.confirm_window
            confirmed = bool(left_closed) or bool(contact_open)
            if contact_opened and mode != "both":
                self.why = "the door contact opened"
            elif confirming and recent and confirmed:
                self.why = "motion in the zone, and the door " + (
                    "contact open" if contact_open else "no longer looks closed"
                )
            elif (not confirming or light_changing) and self._streak >= self._motion.min_frames:
                self.why = f"{self._streak} moving frames in a row" + (
                    " with the contact open" if mode == "both" else ""
                )
                if confirming:
                    self.why += " while the light changed (the door's look says nothing then)"
            else:
                self.pending = confirming and recent and mode != "contact_only"
                return None
            self.in_event = True
            return "start"
        quiet = t - self._last_active
        door_open = door == "open" or contact_open is True
        if quiet < gap or (door_open and quiet < self._door.open_quiet):
            return None
        self.why = f"{quiet:.1f} s without movement"
        if door_open:
            self.why += ", the door still open (door.open_quiet)"
        elif door is not None or contact_open is not None:
            self.why += " and the door closed"
        self.in_event = False
        self._streak = 0
        return "end"
