//! Serving: gateway, autoscaler and model server (filled in by the serving work).
