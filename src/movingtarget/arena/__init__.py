"""The arena box: benign traffic and adversaries on one deployment timeline."""

from movingtarget.arena.arena import (
    ACCOUNT_STRIDE,
    ADVERSARY_CLIENT,
    Arena,
    ArenaConfig,
    BenignTraffic,
    adversary_client,
)
from movingtarget.arena.eventlog import COLUMNS, EventLog
from movingtarget.arena.seeds import DeploymentSeeds

__all__ = [
    "ACCOUNT_STRIDE",
    "ADVERSARY_CLIENT",
    "COLUMNS",
    "Arena",
    "ArenaConfig",
    "BenignTraffic",
    "DeploymentSeeds",
    "EventLog",
    "adversary_client",
]
