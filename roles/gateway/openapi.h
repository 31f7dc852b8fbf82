/* The OpenAPI 3.1 document of the HTTP API, generated from the route table at start. */
#ifndef CHANCED_GATEWAY_OPENAPI_H
#define CHANCED_GATEWAY_OPENAPI_H

/* Returns the document as new JSON text (free with free()). */
char *openapi_build(const char *version);

#endif
