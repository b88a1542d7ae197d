"""End-to-end encryption support: device keys, device lists, to-device messages, cross-signing and key backup."""
