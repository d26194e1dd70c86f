"""Shared LoRaWAN pieces: network-server event model, byte decoders, device profiles, provisioning.

The five network-server adapters (ChirpStack v4 and v3, The Things Stack v3, Actility
ThingPark, Orange Live Objects) each parse their own JSON into one :class:`Uplink`; everything
after that (which device, which profile, which Smart Data Model attributes) lives here once.
"""
