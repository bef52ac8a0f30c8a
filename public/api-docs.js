// Swagger UI over this node's OpenAPI document: no external validator badge, no remote anything.
window.ui = window.SwaggerUIBundle({
	url: "/api/v1/openapi.json",
	dom_id: "#swagger-ui",
	deepLinking: true,
	validatorUrl: null,
	presets: [window.SwaggerUIBundle.presets.apis],
	layout: "BaseLayout",
});
