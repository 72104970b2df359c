"""Microsoft Dynamics 365 (Dataverse): everything the bridge knows about it, and nothing outside
this folder names it."""

from bridge.model import System

DYNAMICS = System("dynamics")
