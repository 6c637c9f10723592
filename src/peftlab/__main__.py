from .child import leave
from .cli import main

leave(main())
