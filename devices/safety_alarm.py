"""Safety alarm (trygghetsalarm) and fall detector, as seen by the alarm platform.

Event codes are Ademco Contact ID, the vocabulary response-centre software shows operators.
"""

from __future__ import annotations

from devices.model import DeviceModel, EventSpec

HEARTBEAT_STOPPED = EventSpec(
    "heartbeat_stopped", "356", priority=3, wire=False, raises="supervision_failure", heartbeat="stop",
    description="the device falls silent (power or network lost); the platform must raise loss of supervision",
)
HEARTBEAT_RESUMED = EventSpec(
    "heartbeat_resumed", "356", qualifier="3", priority=5, wire=False, raises="supervision_restored",
    heartbeat="resume",
    description="the device beats again at its last interval; the platform must restore supervision",
)
LOW_BATTERY = EventSpec(
    "low_battery", "302", priority=4, scaip_stc="0016", description="battery below the warning level (technical alarm)"
)
TEST_TRANSMISSION = EventSpec("test_transmission", "602", priority=5, scaip_stc="0102",
                              description="periodic test report")

SAFETY_ALARM = DeviceModel(
    name="safety_alarm",
    description="Home safety alarm with a wearable button (trygghetsalarm)",
    events={
        "button_press": EventSpec(
            "personal_emergency", "101", priority=1, scaip_stc="0010", description="the user presses the alarm button"
        ),
        "low_battery": LOW_BATTERY,
        "test": TEST_TRANSMISSION,
        "heartbeat_stop": HEARTBEAT_STOPPED,
        "heartbeat_resume": HEARTBEAT_RESUMED,
    },
)

FALL_DETECTOR = DeviceModel(
    name="fall_detector",
    scaip_dty="0005",
    description="Wearable fall detector raising an automatic alarm",
    events={
        "fall": EventSpec("fall_detected", "100", priority=1, scaip_stc="0009",
                          description="a fall is detected (automatic alarm)"),
        "button_press": EventSpec("personal_emergency", "101", priority=1, scaip_stc="0010",
                                  description="the user presses the button"),
        "low_battery": LOW_BATTERY,
        "heartbeat_stop": HEARTBEAT_STOPPED,
        "heartbeat_resume": HEARTBEAT_RESUMED,
    },
)
