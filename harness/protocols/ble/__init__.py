"""GATT characteristic codecs of the Bluetooth health profiles, one module per profile.

Import from `harness.protocols.ble_health`, which re-exports the readings and offers `decode(uuid, data)`.
"""
