use crate::helpers::TestApp;

#[actix_web::test]
async fn the_root_and_the_bare_swagger_path_redirect_to_swagger_ui() {
    let app = TestApp::spawn().await;
    for path in ["/", "/swagger-ui"] {
        let reply = app.get(path).await;
        assert!(
            matches!(reply.status, 301 | 302 | 307 | 308),
            "{path}: {}",
            reply.status
        );
        assert_eq!(reply.header("location"), Some("/swagger-ui/"));
    }
}

#[actix_web::test]
async fn swagger_ui_is_served_without_anything_downloaded_and_points_at_our_document() {
    let app = TestApp::spawn().await;
    let page = app.get("/swagger-ui/").await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("swagger-ui"));
    let config = app.get("/swagger-ui/swagger-initializer.js").await;
    assert_eq!(config.status, 200);
    assert!(String::from_utf8_lossy(&config.body).contains("/api-docs/openapi.json"));
    assert_eq!(
        app.get("/swagger-ui/swagger-ui-bundle.js").await.status,
        200
    );
}

#[actix_web::test]
async fn health_and_readiness_answer_200_with_the_database_up() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/readyz").await.status, 200);
}

#[actix_web::test]
async fn responses_tell_browsers_not_to_sniff_content_types() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.get("/api/v1/books")
            .await
            .header("x-content-type-options"),
        Some("nosniff")
    );
    assert_eq!(
        app.get("/nowhere").await.header("x-content-type-options"),
        Some("nosniff")
    );
}
