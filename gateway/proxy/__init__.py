"""The data plane: routes, key cache, replay guard, forwarding, and the request pipeline."""
