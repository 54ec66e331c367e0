"""Emulator routes for the qianfan provider."""

from __future__ import annotations

from aiohttp import web

from ._emulator import Emulator


def register(emu: Emulator, app: web.Application) -> None:
    """Add the qianfan routes."""
