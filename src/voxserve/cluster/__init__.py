"""voxserve on a Ray Serve cluster: another door onto the same services.

An ingress deployment serves the whole OpenAI HTTP surface (the FastAPI app of `create_app`)
with its speech-to-text and speech services replaced by proxies (`proxies`) that call one
deployment per served model (`replica`) through deployment handles; each model replica runs
the local services with its own scheduler, so 429s, deadlines and cancellation behave as on
one machine. `deploy` builds the Serve application from the settings (`VOXSERVE_RAY_*`).

Everything here imports Ray lazily or only in the modules that run on the cluster, so the
package can be imported without the `ray` extra.
"""
