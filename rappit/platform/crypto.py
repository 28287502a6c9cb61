"""Encryption at rest for channel secrets and credentials (Fernet, with key rotation)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["InvalidToken", "SecretBox"]


class SecretBox:
    """ENCRYPTION_KEY lists keys newest first: the first encrypts, every one decrypts, so a new key
    can be put in front and old ciphertexts re-encrypted (`rotate`) at leisure."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        return self._fernet.decrypt(ciphertext).decode()

    def rotate(self, ciphertext: bytes) -> bytes:
        return self._fernet.rotate(ciphertext)
