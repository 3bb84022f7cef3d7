"""The arena box: benign traffic and adversaries on one deployment timeline."""

from movingtarget.arena.arena import ADVERSARY_CLIENT, Arena, ArenaConfig, BenignTraffic
from movingtarget.arena.eventlog import COLUMNS, EventLog
from movingtarget.arena.seeds import DeploymentSeeds

__all__ = [
    "ADVERSARY_CLIENT",
    "COLUMNS",
    "Arena",
    "ArenaConfig",
    "BenignTraffic",
    "DeploymentSeeds",
    "EventLog",
]
