#!/bin/sh
# Activate the environment the image was built with (PATH, CONDA_PREFIX, its activate.d scripts),
# then run the container's command in it: `docker run IMAGE demo-greet`, or any other program.
set -e
. /opt/activate.sh
exec "$@"
