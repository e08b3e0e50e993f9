"""The dispatcher: layers B and C of the seed. Consumes requests from the
internal channel, persists task trees, and drives instances through their
lifecycle by streaming operations to the registered controllers."""
